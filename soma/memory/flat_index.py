"""The in-process vector index of the SQLite stack: exact cosine search per scope.

Vectors of one scope (tenant, agent, end user or none) live in one contiguous float32 matrix,
so a recall is a matrix-vector product over that user's memories plus one over the agent's
shared ones: other users and tenants cost nothing, and no filter is applied row by row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from soma.memory.embedder import Vectors
from soma.memory.model import Memory, Recalled, Scope

_Key = tuple[str, str, str | None]


@dataclass
class _Partition:
    vectors: Vectors
    memories: list[Memory] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)

    def add(self, memory: Memory, vector: Vectors) -> None:
        if memory.id in self.position:
            return
        n = len(self.memories)
        if n == len(self.vectors):
            grown = np.zeros((max(16, n * 2), self.vectors.shape[1]), np.float32)
            grown[:n] = self.vectors
            self.vectors = grown
        self.vectors[n] = vector
        self.memories.append(memory)
        self.position[memory.id] = n

    def remove(self, memory_id: str) -> None:
        at = self.position.pop(memory_id)
        last = len(self.memories) - 1
        if at != last:
            # Swap the last entry into the hole: removal stays O(1) and the matrix dense.
            moved = self.memories[last]
            self.vectors[at] = self.vectors[last]
            self.memories[at] = moved
            self.position[moved.id] = at
        self.memories.pop()

    def search(self, vector: Vectors, k: int) -> list[Recalled]:
        n = len(self.memories)
        if n == 0:
            return []
        scores = self.vectors[:n] @ vector
        k = min(k, n)
        top = np.argpartition(-scores, k - 1)[:k]
        return [Recalled(self.memories[i], float(scores[i])) for i in top]


class FlatIndex:
    """Live memories of one embedding model, one partition per scope."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._partitions: dict[_Key, _Partition] = {}
        self._where: dict[str, _Key] = {}

    def __len__(self) -> int:
        return len(self._where)

    def add(self, memory: Memory, vector: Vectors) -> None:
        key = (memory.tenant_id, memory.agent_id, memory.user)
        partition = self._partitions.get(key)
        if partition is None:
            partition = self._partitions[key] = _Partition(np.zeros((16, self.dim), np.float32))
        partition.add(memory, vector)
        self._where[memory.id] = key

    def remove(self, memory_id: str) -> None:
        key = self._where.pop(memory_id, None)
        if key is None:
            return
        partition = self._partitions[key]
        partition.remove(memory_id)
        if not partition.memories:
            del self._partitions[key]

    def search(self, scope: Scope, vector: Vectors, k: int, *, shared: bool) -> list[Recalled]:
        """Top `k` of the scope (and, with `shared`, the agent's shared memories), best first."""
        keys = [(scope.tenant_id, scope.agent_id, scope.user)]
        if shared and scope.user is not None:
            keys.append((scope.tenant_id, scope.agent_id, None))
        found = [
            recalled
            for key in keys
            if (partition := self._partitions.get(key)) is not None
            for recalled in partition.search(vector, k)
        ]
        found.sort(key=lambda r: -r.score)
        return found[:k]
