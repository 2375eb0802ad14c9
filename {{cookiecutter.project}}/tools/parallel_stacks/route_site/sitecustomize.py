"""Put first on PYTHONPATH by the pytest plugin: Python subprocesses a test starts route the worker's loopback
endpoints as the test process does (`parallel_stacks/localroute.py`). Inert without PARALLEL_STACKS_ROUTES;
then hands over to the sitecustomize it shadows, if there is one."""

import os

if os.environ.get("PARALLEL_STACKS_ROUTES"):

    def _route() -> None:
        import importlib.util
        import sys

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "localroute.py")
        spec = importlib.util.spec_from_file_location("parallel_stacks_localroute", path)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        module.install_from_env(os.environ, on_error=lambda line: print(line, file=sys.stderr))

    try:
        _route()
    except Exception as exc:  # never stop a subprocess from starting
        print(f"parallel-stacks: localhost routing not installed in this subprocess: {exc}", file=__import__("sys").stderr)


def _next_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util
    import sys

    # past every route_site (a nested run's copy of this file would hand over back to this one)
    rest = [p for p in sys.path if os.path.basename(os.path.abspath(p or ".")) != "route_site"]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_next_sitecustomize()
