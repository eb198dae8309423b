# strom broker image. Configure it with KAFKA_* / STROM_* environment variables (see
# docker/entrypoint.py), e.g. docker run -p 9092:9092 -e KAFKA_NUM_PARTITIONS=6 strom
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/strom
COPY pyproject.toml README.md ./
COPY strom ./strom
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/strom strom \
    && mkdir -p /var/lib/strom/data && chown -R strom /var/lib/strom
COPY docker/entrypoint.py /opt/strom/entrypoint.py

USER strom
VOLUME ["/var/lib/strom/data"]
EXPOSE 9092
ENTRYPOINT ["python", "/opt/strom/entrypoint.py"]
