"""Lobbies get an opaque public id (the API's and the owners' pages' ``id``): existing rows are
given one each, then the column becomes unique."""

from django.db import migrations, models

import lobbies.models


def give_public_ids(apps, schema_editor):
    Lobby = apps.get_model("lobbies", "Lobby")
    for lobby in Lobby.objects.filter(public_id__isnull=True).only("pk"):
        lobby.public_id = lobbies.models.new_public_id()
        lobby.save(update_fields=["public_id"])


class Migration(migrations.Migration):
    dependencies = [("lobbies", "0002_lobby_plural")]

    operations = [
        migrations.AddField(
            model_name="lobby",
            name="public_id",
            field=models.CharField(editable=False, max_length=16, null=True),
        ),
        migrations.RunPython(give_public_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="lobby",
            name="public_id",
            field=models.CharField(
                default=lobbies.models.new_public_id,
                editable=False,
                help_text="The lobby's id in the API and the owners' pages (opaque).",
                max_length=16,
                unique=True,
            ),
        ),
    ]
