# The MLflow model of a reuters-ray run (reuters_ray.track.pyfunc): MLflow runs this file to load it.
import mlflow

from reuters_ray.track.pyfunc import predictor_model

mlflow.models.set_model(predictor_model())
