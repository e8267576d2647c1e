from apps.keys.models import ApiKey


def api_key_get_by_hash(key_hash: str) -> ApiKey | None:
    return ApiKey.objects.select_related("tenant").filter(key_hash=key_hash).first()
