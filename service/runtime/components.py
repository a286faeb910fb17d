"""The parts a configuration runs with, built all at once or not at all."""

from __future__ import annotations

from dataclasses import dataclass

from service.content.source import Source
from service.errors import ConfigError
from service.ledger import State
from service.mail.compose import Composer
from service.mail.mime import read_dkim_key
from service.mail.notices import SIGNUP_TEMPLATES
from service.mail.transport import transport_for
from service.publish.build import Builder
from service.runtime.schedule import cron_trigger
from service.serve.signup import SIGNUP_PAGES
from service.settings import Settings
from service.templating import Templates

__all__ = ["Components"]


@dataclass(frozen=True)
class Components:
    """One configuration's source, builder, composer and templates."""

    settings: Settings
    source: Source
    builder: Builder
    composer: Composer
    templates: Templates

    @classmethod
    def build(cls, settings: Settings, state: State) -> Components:
        """Every part for ``settings``; BantinError (ConfigError...) if any cannot be made,
        and then none is: a refused edit leaves the running configuration untouched."""
        site, mail, schedule = settings.site, settings.mail, settings.schedule
        dkim = read_dkim_key(mail.dkim_domain, mail.dkim_selector, mail.dkim_key_file)
        key = state.keys.secret_key(settings.server.secret_key)
        transport_for(settings)  # refuses what it cannot use
        templates = Templates(site.templates_dir, zone=site.zone, language=site.language)
        if settings.subscribe.enabled:
            _check_signup_templates(templates)
        for expression in (schedule.daily, schedule.weekly):
            cron_trigger(expression, site.zone)
        return cls(
            settings=settings,
            source=Source(
                settings.source.dir,
                site.zone,
                *state.articles.identities(),
                index=settings.state.scan_index,
            ),
            builder=Builder(settings, site.templates_dir, index=settings.state.build_index),
            composer=Composer(settings, key, dkim),
            templates=templates,
        )


def _check_signup_templates(templates: Templates) -> None:
    """subscribe.enabled needs the subscription templates: a configuration without them is
    refused at start-up (and on reload) rather than failing in front of a citizen."""
    problems = templates.check(SIGNUP_PAGES + SIGNUP_TEMPLATES)
    if problems:
        raise ConfigError(
            "subscribe.enabled",
            f"{problems[0]}; the subscription form needs it: copy it from the repository's "
            "templates/ (or set subscribe.enabled = false)",
        )
