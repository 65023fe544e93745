# "Evaluate" means policy evaluation (the policies app); the commit a mapping was last rendered at, or tried,
# is its last render attempt.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("sources", "0003_scrub_repository_url_passwords"),
    ]

    operations = [
        migrations.RenameField(
            model_name="pathmapping",
            old_name="last_evaluated_sha",
            new_name="last_render_attempt_sha",
        ),
    ]
