"""The ``s3ddb`` command: above the engine (``loader``), the Lambda (``lambda_src``) and the local
stand-ins (``infra``), the one place besides the Lambda handler that reads the environment."""
