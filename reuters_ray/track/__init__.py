"""Watching and comparing runs: MLflow tracking (mlflow_run, pyfunc), Ray application metrics for the dashboard's
Metrics view (live). Below the recipes, above the run folder and the predictor; MLflow and Ray are imported only when
they are used.
"""
