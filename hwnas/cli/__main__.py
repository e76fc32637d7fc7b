from hwnas.cli import app

app()
