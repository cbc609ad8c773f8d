"""The default scenario's data files (*.json), shipped as package data so that a plain install
finds them where `seedloop.settings.REPO_SEEDS` looks: the `seeds` folder beside `seedloop`."""
