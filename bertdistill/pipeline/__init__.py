"""The one-command chain: stage orchestration with resume, and the report (accuracy, INT8, speed,
robustness tables and plot).
"""
