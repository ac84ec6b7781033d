"""A one-shot command's local Ray keeps the workers' lines but not its own chatter."""

import logging

from services.config import Settings
from services.jobs.ray_jobs import local_env, ray_logging


def test_local_ray_is_quiet_below_errors_and_watches_no_preemption():
    level, env = ray_logging(Settings(ray_address=None), {})
    assert level == logging.ERROR and env == {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    assert "RAY_BACKEND_LOG_LEVEL" not in env  # Ray announces it from every process


def test_what_the_user_exported_wins():
    level, env = ray_logging(
        Settings(ray_address=None), {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"}
    )
    assert level == logging.ERROR and env == {}


def test_a_cluster_logs_as_its_operator_set_it():
    assert ray_logging(Settings(ray_address="ray://head:10001"), {}) == (logging.WARNING, {})


def test_a_local_train_controller_polls_its_workers_often_a_cluster_as_set():
    assert local_env(Settings(ray_address=None), {}) == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    assert local_env(Settings(ray_address=None), {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2"}) == {}
    assert local_env(Settings(ray_address="ray://head:10001"), {}) == {}
