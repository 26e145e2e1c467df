"""The local runtime: the deployed pipeline's moving parts, on one machine, without Docker
or an AWS account (moto's SQS server, a signing-aware webhook receiver, an emulated SQS
event source mapping and schedule)."""
