"""Which of the control plane's search attributes a namespace lacks (worker start-up, starter)."""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError

from controlplane import search_attributes as names

log = logging.getLogger(__name__)


async def missing_search_attributes(client: Client) -> list[str] | None:
    """Names of our attributes the namespace does not have as Keyword; None if it cannot tell."""
    try:
        listing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as exc:
        log.info("cannot list search attributes of namespace %s: %s", client.namespace, exc)
        return None
    registered = {
        name: IndexedValueType.Name(kind)
        for name, kind in {**listing.system_attributes, **listing.custom_attributes}.items()
    }
    return names.missing(registered)


async def warn_if_missing(client: Client) -> list[str] | None:
    """Log one warning naming every missing attribute and how to create them; never raise."""
    missing = await missing_search_attributes(client)
    if missing:
        log.warning(
            "namespace %s lacks the search attributes %s (Keyword): nodes will not be "
            "filterable by them until they exist. Create them with: %s",
            client.namespace,
            ", ".join(missing),
            "; ".join(
                command
                for command in names.create_commands(client.namespace)
                if command.split("--name ")[1].split()[0] in missing
            ),
        )
    return missing
