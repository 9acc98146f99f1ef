# syntax=docker/dockerfile:1
# The team's `mlflow server` (docker/compose.yaml, cluster/kuberay/mlflow-server.yaml): MLflow at the project's pin
# (constraints.txt), its basic-auth app, and psycopg2 for the PostgreSQL backend. Build from the repository root:
#   docker build -f docker/mlflow.Dockerfile -t s4sweep-mlflow:3.17.2 .
FROM python:3.11.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MLFLOW_DISABLE_TELEMETRY=true
COPY constraints.txt /tmp/constraints.txt
# boto3: artifacts in S3 (MLFLOW_ARTIFACTS_DESTINATION=s3://...); add google-cloud-storage for gs://
RUN pip install -c /tmp/constraints.txt "mlflow[auth]" psycopg2-binary==2.9.13 "boto3>=1.34" \
    && pip check \
    && python -c "import mlflow; assert mlflow.__version__ == '3.17.2', mlflow.__version__"
COPY --chmod=0755 docker/mlflow-server.sh /usr/local/bin/mlflow-server.sh

RUN useradd --create-home --uid 1000 mlflow && install -d -o mlflow /mlflow
USER mlflow
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/mlflow-server.sh"]
