"""The online dispatcher: live requests through the adaptive scheduler (runner.py) and its private
helpers (commit timing, guards, quota pause, dedupe, hedging, health)."""
