FROM python:3.11-slim
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir -e .
ENV DJANGO_SETTINGS_MODULE=apps.platform.settings
EXPOSE 8000
