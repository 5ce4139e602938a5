"""Adapters to AWS storage. Only this package imports pynamodb or boto3 for DynamoDB."""
