from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from lobbies import onboarding, pages, views
from lobbies.api import api

urlpatterns = [
    path("", views.index, name="index"),
    path("api/stats", views.stats, name="stats"),
    path("api/", api.urls),
    path("demo/", views.demo, name="demo"),
    # Browsers ask for /favicon.ico whatever the page says.
    path("favicon.ico", RedirectView.as_view(url=static("relay/favicon.svg"), permanent=True)),
    path("admin/", admin.site.urls),
    # Signing in and out, sign-in links and (when RELAY_SIGNUP is on) signing up: no password
    # reset or change pages (their e-mails would carry links built on the request's Host). The
    # sign-in links `manage.py create_owner` prints (on RELAY_PUBLIC_URL) open the reset's
    # confirmation step alone; operators also set passwords in the admin.
    path("accounts/login/", onboarding.SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", onboarding.signup, name="signup"),
    path(
        "accounts/welcome/<uidb64>/<token>/",
        onboarding.SigninLinkView.as_view(),
        name="signin-link",
    ),
    path("my/", pages.my_lobbies, name="my-lobbies"),
    path("my/lobbies/<str:lobby_id>/", pages.my_lobby, name="my-lobby"),
    path("my/lobbies/<str:lobby_id>/live/", pages.my_lobby_live, name="my-lobby-live"),
    path("my/access/", pages.my_access, name="my-access"),
]
