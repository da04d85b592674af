"""Turning raw records into a dataset one can train on: normalise, scrub, dedupe, measure, split."""
