from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
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
    # Only signing in and out: no password reset or change pages (their e-mails would carry
    # links built on the request's Host; operators reset passwords in the admin).
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("my/", pages.my_lobbies, name="my-lobbies"),
    path("my/lobbies/<str:lobby_id>/", pages.my_lobby, name="my-lobby"),
    path("my/lobbies/<str:lobby_id>/live/", pages.my_lobby_live, name="my-lobby-live"),
    path("my/access/", pages.my_access, name="my-access"),
]
