"""Ray Train's fixed scaling policy without its autoscaling coordinator, for the folds of a Ray cluster this driver
started itself (`ray.init()` on one machine: no autoscaler, so nothing to ask for more nodes).

Ray Train 2.60's FixedScalingPolicy registers every run's resources with Ray Data's AutoscalingCoordinator, a
detached actor (a process importing Ray Data) that forwards them to the cluster's autoscaler; each fold's controller
waits for its answer at start. Where no autoscaler can exist that is a process and a wait for nothing: on 2 cores a
quick run's folds started about 2 s sooner without it (docs/results.md, issue 45). A fold's Train controller
unpickles this class, hence a module of its own, light to import. Private API (Ray is pinned to 2.60.x);
recipes.cluster.fold_trainer falls back to Ray Train's own policy if these names are gone.
"""

from __future__ import annotations

from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy


class FixedClusterPolicy(FixedScalingPolicy):
    """FixedScalingPolicy with no resource requests to the autoscaling coordinator (same workers, same decisions)."""

    def after_controller_start(self, train_run_context) -> None:
        pass

    async def before_controller_shutdown(self) -> None:
        pass

    def before_controller_abort(self) -> None:
        pass

    def _maybe_send_resource_request(self) -> None:
        pass

    def _send_resource_request(self) -> None:
        pass
