from __future__ import annotations

from django.apps import AppConfig


class RotaConfig(AppConfig):
    name = "rota"
    label = "rota"
    verbose_name = "rota"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from rota import checks  # noqa: F401  (registers the system checks)
        from rota.conf import SettingsError, reload_settings

        def on_setting_changed(setting: str, **kwargs: object) -> None:
            if setting == "ROTA":
                try:
                    reload_settings()
                except SettingsError:
                    pass  # reported by the system check rota.E001

        setting_changed.connect(on_setting_changed, weak=False)

        from django.contrib.auth.signals import user_login_failed

        from rota.ops.security import audit_failed_login

        user_login_failed.connect(audit_failed_login, dispatch_uid="rota.audit_failed_login")
