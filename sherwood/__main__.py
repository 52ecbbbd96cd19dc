from sherwood.cli import app

app()
