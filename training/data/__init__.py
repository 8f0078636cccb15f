"""Training sequences: leave-one-out, point-in-time-correct, from the Feast offline store."""
