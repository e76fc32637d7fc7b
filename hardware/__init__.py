"""The accelerator side: spec schema and loader, bundled specs, the op graph and fusion, the simulator."""
