"""Next-horizon forecasting: the feature rows of the coming periods and the batch forecasts."""
