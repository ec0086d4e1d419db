# The example shop and its fake payment server, for docker/compose.yml.
FROM python:3.12-slim
WORKDIR /shop
COPY examples/shop/requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY examples/shop/ .
ENV HOST=0.0.0.0
USER nobody
CMD ["python", "app.py"]
