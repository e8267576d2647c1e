from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="model",
            name="prompt_allowance_per_request",
            field=models.PositiveIntegerField(
                default=512,
                help_text="Prompt tokens the chat template may add per request (default "
                "system prompt, tool instructions)",
            ),
        ),
        migrations.AddField(
            model_name="model",
            name="prompt_allowance_per_message",
            field=models.PositiveIntegerField(
                default=32, help_text="Prompt tokens the chat template may add per message"
            ),
        ),
        migrations.AddField(
            model_name="model",
            name="image_token_bound",
            field=models.PositiveIntegerField(
                default=4096, help_text="The most prompt tokens one image can cost"
            ),
        ),
        migrations.AddField(
            model_name="model",
            name="max_output_tokens",
            field=models.PositiveIntegerField(
                default=4096,
                help_text="The most tokens one answer can have: reserved when a request "
                "sets no max_tokens, and the cap of a larger max_tokens",
            ),
        ),
    ]
