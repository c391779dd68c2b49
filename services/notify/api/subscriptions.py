"""Personal subscriptions to key incident events: each user manages their own."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from services.notify.api.deps import Service, Staff
from services.notify.api.schemas import SubscriptionInput, SubscriptionRead
from services.notify.domain.subscriptions import Subscription, SubscriptionKind
from shared.errors import NotFound
from shared.http.problems import problem_responses

router = APIRouter(prefix="/api/v1/notify/subscriptions/mine", tags=["notify: subscriptions"])


@router.get("", responses=problem_responses(401, 403), summary="My subscriptions")
async def my_subscriptions(user: Staff, notify: Service) -> list[SubscriptionRead]:
    return [SubscriptionRead.of(s) for s in await notify.subscriptions.of_user(user.subject)]


@router.put(
    "/{kind}",
    responses=problem_responses(401, 403, 422),
    summary="Subscribe to p1_opened, major_declared or assigned_to_me",
)
async def subscribe(
    kind: SubscriptionKind, body: SubscriptionInput, user: Staff, notify: Service
) -> SubscriptionRead:
    subscription = Subscription(
        user=user.subject,
        kind=kind,
        channels=tuple(dict.fromkeys(body.channels)),
        services=frozenset(body.services),
    )
    await notify.subscriptions.put(subscription)
    return SubscriptionRead.of(subscription)


@router.delete(
    "/{kind}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404, 422),
    summary="Unsubscribe",
)
async def unsubscribe(kind: SubscriptionKind, user: Staff, notify: Service) -> Response:
    if not await notify.subscriptions.remove(user.subject, kind):
        raise NotFound(f"you have no {kind} subscription")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
