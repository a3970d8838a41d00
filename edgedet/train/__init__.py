"""Training: Hungarian matching, losses as named terms, the weight-sharing NAS loop."""
