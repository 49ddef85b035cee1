"""Forecasting a run before it is paid for: its jobs played through Batch's delays."""
