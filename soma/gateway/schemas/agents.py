"""Bodies of `/v1/agents`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from soma.gateway.schemas.common import Metadata, Name, RequestBody, ResponseBody, StoredMetadata
from soma.storage.repositories import Agent

MaxSteps = Annotated[int, Field(ge=1, le=50)]
RunTimeout = Annotated[float, Field(gt=0, le=86_400)]
Instructions = Annotated[str, Field(max_length=100_000)]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]
ToolName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:*?\[\]-]+$",
        description="A tool name or a pattern (`*`, `?`, `[...]`, as in `files`, `demo.*`).",
    ),
]
Tools = Annotated[list[ToolName], Field(max_length=256)]
Concurrency = Literal["enqueue", "reject"]
RecallK = Annotated[int, Field(ge=1, le=100, description="Memories recalled per turn.")]
RecallBudget = Annotated[
    int, Field(ge=16, le=100_000, description="Prompt tokens recalled memories may take.")
]

DEFAULT_MAX_STEPS = 8
DEFAULT_RUN_TIMEOUT_S = 120.0


def _unique(tools: list[str]) -> list[str]:
    if len(set(tools)) != len(tools):
        raise ValueError("tool names must be unique")
    return tools


class AgentCreate(RequestBody):
    name: Name
    instructions: Instructions = ""
    model: ModelName | None = None
    """None means `llm.default_model`."""
    max_steps: MaxSteps = DEFAULT_MAX_STEPS
    run_timeout_s: RunTimeout = DEFAULT_RUN_TIMEOUT_S
    concurrency: Concurrency = "enqueue"
    metadata: Metadata = Field(default_factory=dict)
    tools: Tools = Field(default_factory=list)
    """Tools the agent may call (names or patterns)."""
    require_approval: Tools = Field(default_factory=list)
    """Tools (names or patterns) whose calls wait for a person's approval."""
    memory: bool = False
    """Recall memories into every turn and keep what is worth keeping after it."""
    recall_k: RecallK | None = None
    """None means the platform's `memory.recall_k`."""
    recall_budget_tokens: RecallBudget | None = None
    """None means the platform's `memory.recall_budget_tokens`."""

    @field_validator("tools", "require_approval")
    @classmethod
    def _tools_unique(cls, tools: list[str]) -> list[str]:
        return _unique(tools)


class AgentUpdate(RequestBody):
    """Only the fields present change. `model: null` means `llm.default_model`; no other
    field may be null (the schema says so: their `None` default only means "absent")."""

    name: Name | SkipJsonSchema[None] = None
    instructions: Instructions | SkipJsonSchema[None] = None
    model: ModelName | None = None
    max_steps: MaxSteps | SkipJsonSchema[None] = None
    run_timeout_s: RunTimeout | SkipJsonSchema[None] = None
    concurrency: Concurrency | SkipJsonSchema[None] = None
    metadata: Metadata | SkipJsonSchema[None] = None
    tools: Tools | SkipJsonSchema[None] = None
    require_approval: Tools | SkipJsonSchema[None] = None
    memory: bool | SkipJsonSchema[None] = None
    recall_k: RecallK | None = None
    """`null` means the platform's `memory.recall_k` again."""
    recall_budget_tokens: RecallBudget | None = None
    """`null` means the platform's `memory.recall_budget_tokens` again."""

    @field_validator("tools", "require_approval")
    @classmethod
    def _tools_unique(cls, tools: list[str] | None) -> list[str] | None:
        return None if tools is None else _unique(tools)

    @model_validator(mode="after")
    def _no_nulls(self) -> AgentUpdate:
        nullable = {"model", "recall_k", "recall_budget_tokens"}
        nulls = sorted(
            name for name in self.model_fields_set - nullable if getattr(self, name) is None
        )
        if nulls:
            raise ValueError(f"fields may not be null: {', '.join(nulls)}")
        return self

    @property
    def resets_model(self) -> bool:
        """`model: null` was sent: the agent follows `llm.default_model` again."""
        return "model" in self.model_fields_set and self.model is None


class AgentOut(ResponseBody):
    id: str
    name: str
    instructions: str
    model: str
    max_steps: int
    run_timeout_s: float
    concurrency: Concurrency
    metadata: StoredMetadata
    tools: list[str]
    require_approval: list[str]
    memory: bool
    recall_k: int | None
    recall_budget_tokens: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, agent: Agent) -> AgentOut:
        return cls(
            id=agent.id,
            name=agent.name,
            instructions=agent.instructions,
            model=agent.model,
            max_steps=agent.settings.max_steps,
            run_timeout_s=agent.settings.run_timeout_s,
            concurrency=agent.settings.concurrency,
            metadata=agent.settings.metadata,
            tools=list(agent.tools),
            require_approval=list(agent.settings.require_approval),
            memory=agent.memory,
            recall_k=agent.settings.recall_k,
            recall_budget_tokens=agent.settings.recall_budget_tokens,
            created_at=agent.created_at,
            updated_at=agent.updated_at,
        )
