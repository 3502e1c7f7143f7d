"""Tenants: which tenant an API key belongs to, and what each tenant may hold and do at once (quotas, rate limits)."""
