"""The Lambda side of s3ddb: events in, a deadline-aware engine run, a fenced self-continuation out.

Import-light on purpose: ``import lambda_src.handler`` pulls in no AWS SDK (cold start).
"""
