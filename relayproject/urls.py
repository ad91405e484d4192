from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from lobbies import pages, views
from lobbies.api import api

urlpatterns = [
    path("", views.index, name="index"),
    path("api/stats", views.stats, name="stats"),
    path("api/", api.urls),
    path("demo/", views.demo, name="demo"),
    # Browsers ask for /favicon.ico whatever the page says.
    path("favicon.ico", RedirectView.as_view(url=static("relay/favicon.svg"), permanent=True)),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("my/", pages.my_lobbies, name="my-lobbies"),
    path("my/lobbies/<str:lobby_id>/", pages.my_lobby, name="my-lobby"),
    path("my/access/", pages.my_access, name="my-access"),
]
