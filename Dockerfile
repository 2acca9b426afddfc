# One image for every Reelfab service: `reelfab serve <name>` picks the service.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY libs libs
COPY services services
COPY schemas schemas
RUN pip install --no-cache-dir .
ENV REELFAB_HTTP_HOST=0.0.0.0 REELFAB_LOG_FORMAT=json
USER nobody
ENTRYPOINT ["reelfab"]
