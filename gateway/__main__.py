from gateway.cli import run

run()
