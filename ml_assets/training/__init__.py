"""Training set assembly and the XGBoost demand model."""
