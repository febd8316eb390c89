"""Settings from the environment (and a `.env` file). Secrets stay SecretStr: never logged."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str | None = None
    discord_token: SecretStr | None = None
    discord_api_url: str | None = None  # REST base URL (a proxy, or a local fake in tests)
    discord_guild_id: str | None = None  # sync /crew to this server at once (else globally)
    discord_message_content: bool = False  # the privileged intent: thread replies as feedback
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    crewchief_llm: Literal["openai", "offline"] | None = None
    crewchief_database_url: str = "sqlite:///crewchief.db"
    crewchief_config: Path = Path("crewchief.yml")
    crewchief_approvers: str = ""
    crewchief_llm_timeout: float = 60.0
    crewchief_llm_retries: int = 3
    crewchief_chart_dir: Path | None = None  # the shell's digest charts (default: a temp dir)

    @property
    def llm_provider(self) -> Literal["openai", "offline"]:
        if self.crewchief_llm:
            return self.crewchief_llm
        return "openai" if self.openai_api_key else "offline"

    @property
    def approvers(self) -> list[str]:
        return [a.strip() for a in self.crewchief_approvers.split(",") if a.strip()]
