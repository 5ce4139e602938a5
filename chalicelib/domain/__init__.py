"""Pure domain logic: no boto3, no pynamodb, no HTTP. Tested without AWS."""
