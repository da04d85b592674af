"""Sensors and schedules that re-index, retrain, re-evaluate and promote on their own."""
