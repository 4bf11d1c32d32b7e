"""ClientApp of the example: fedshield's, with relative config paths resolved against the app folder."""

from pathlib import Path

from fedshield.flower import make_client_app

app = make_client_app(base_dir=Path(__file__).resolve().parent.parent)
