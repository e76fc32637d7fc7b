"""hwnas: hardware-aware neural architecture search for neural accelerators."""
import os

# Telemetry off by default (a user can still opt in by setting these first).
for _key, _value in {"PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "MLFLOW_DISABLE_TELEMETRY": "true",
                     "DVC_NO_ANALYTICS": "1"}.items():
    os.environ.setdefault(_key, _value)

# Idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads make
# every op wait for a descheduled peer. Read when torch loads, so set before it is imported;
# worker processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
