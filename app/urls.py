"""Routes of the items API. The trailing slash is optional and never redirected."""

from django.urls import re_path

from app.views import ItemDetailApi, ItemListCreateApi

urlpatterns = [
    re_path(r"^items/?$", ItemListCreateApi.as_view(), name="items"),
    re_path(r"^items/(?P<item_id>[^/]+)/?$", ItemDetailApi.as_view(), name="item"),
]
