# One image for every Sherwood process; the command picks the process.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sherwood sherwood
COPY workflows workflows
COPY activities activities
COPY workers workers
COPY api api
COPY db db
COPY domain domain
COPY fix fix
COPY marketdata marketdata
COPY simulators simulators
COPY bench bench
RUN pip install --no-cache-dir .
RUN useradd --system --create-home sherwood && mkdir -p /var/lib/sherwood && chown sherwood /var/lib/sherwood
USER sherwood
CMD ["sherwood", "serve", "api"]
