"""The demand forecaster Bento: service.py and its bentofile.yaml."""
