"""State compatibility only: the Lambda Cloud code lives in sophia_infra.program.lambda_cloud."""
