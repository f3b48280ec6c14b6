"""The topic contract and the typed messages that travel on it."""
