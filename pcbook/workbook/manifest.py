"""The course's table of contents: every lesson, in order, each declared in its own module.

A lesson module of pcbook/lessons/ (`lNN_<slug>.py`) holds the lesson's declaration (`LESSON`: its
steps, their servers, configs, clients and checks, on the types of pcbook.stage.model) together with
its acts and judges. The Makefile (`make lesson-N`, `check-N`, `nginx-N`, `list`, `progress`), the
notebooks, the checkpoint tests and the docs all read the lessons from here.
"""

from __future__ import annotations

from types import ModuleType

from pcbook.lessons import (
    l01_tls_flag,
    l02_insecure_load_balancing,
    l03_tls_at_nginx,
    l04_tls_to_backends,
    l05_mutual_tls_to_backends,
    l06_routing_by_service,
    l07_client_side_balancing,
    l08_when_a_backend_fails,
    l09_streams_and_l4_vs_l7,
    l10_cost_of_the_hop,
    l11_service_discovery,
    l12_look_aside_xds,
    l13_envoy,
    l14_connections_and_retries,
)
from pcbook.stage.model import DOCS_URL, NGINX_PORT, Lesson, Server, Step

__all__ = ["DOCS_URL", "LESSONS", "MODULES", "NGINX_PORT", "Lesson", "Server", "Step", "get", "module_name"]

MODULES: tuple[ModuleType, ...] = (
    # The tutorial: the lecture's own steps.
    l01_tls_flag,
    l02_insecure_load_balancing,
    l03_tls_at_nginx,
    l04_tls_to_backends,
    l05_mutual_tls_to_backends,
    l06_routing_by_service,
    # Beyond it, each on its own ports (50071.., 8071.. for lesson 7, and so on).
    l07_client_side_balancing,
    l08_when_a_backend_fails,
    l09_streams_and_l4_vs_l7,
    l10_cost_of_the_hop,
    l11_service_discovery,
    l12_look_aside_xds,
    l13_envoy,
    l14_connections_and_retries,
)
LESSONS: tuple[Lesson, ...] = tuple(module.LESSON for module in MODULES)


def module_name(lesson: Lesson) -> str:
    """The name of the module a lesson lives in: pcbook/lessons/lNN_<slug>.py."""
    return f"l{lesson.number:02d}_{lesson.slug.replace('-', '_')}"


def get(number: int) -> Lesson:
    for lesson in LESSONS:
        if lesson.number == number:
            return lesson
    known = ", ".join(str(lesson.number) for lesson in LESSONS)
    raise KeyError(f"there is no lesson {number}; the lessons are {known}")
