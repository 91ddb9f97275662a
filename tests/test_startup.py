"""Start-up: the app lists the adapters from their cards, serves the page, then puts their weights into the model
behind it (Playground.load(behind_page=True), Playground.load_behind_page, AdapterStore.load_pending); whatever
decodes with an adapter not in yet waits for it, and gets what it would have got had it been loaded at start."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from app.config import AppConfig, ModelsConfig, ServiceError
from app.service import SHIPPED, Playground
from ipa.decoding.run import DecodeConfig, DecodeRun
from ipa.policy_adapter import AdapterCard, AdapterHost
from tests.helpers import free_port, perturb_lora, tiny_llama


def shipped(folder: Path, tokenizer) -> Path:
    """Two steering adapters of the tiny model, saved as shipped ones: sentiment (the last tab's) and toxicity (the
    first tab's)."""
    maker = AdapterHost(tiny_llama(tokenizer), tokenizer, "tiny")
    for seed, name in enumerate(("sentiment", "toxicity"), 1):
        maker.new_adapter(name, AdapterCard(task=name, algorithm="pg", steps=3))
        perturb_lora(maker, name, scale=0.5, seed=seed)
        maker.save_adapter(name, folder / name)
    return folder


def tiny_playground(tokenizer, adapters: Path, root: Path, later: bool) -> Playground:
    host = AdapterHost(tiny_llama(tokenizer), tokenizer, "tiny")
    config = AppConfig(adapters_dir=str(adapters), runs_dir=str(root / "runs"), models=ModelsConfig(device="cpu"), warm_up=False)
    playground = Playground(config, host, host, {}, torch.device("cpu"))
    playground.load_known_adapters(later=later)
    return playground


def decode(playground: Playground, adapter: str):
    """One run through the playground's own path: its policy (Generator._policy), decoded by its scheduler."""
    _, policy = playground.generation._policy(playground.adapter(adapter), 1.0, [])
    run = DecodeRun(policy, ["The movie was"], DecodeConfig(max_new_tokens=12, seed=4), n=2)
    return list(playground.scheduler.submit(run))[-1]


def test_a_run_for_an_adapter_not_in_yet_waits_and_decodes_as_if_it_was_loaded_at_start(tmp_path, tokenizer):
    adapters = shipped(tmp_path / "adapters", tokenizer)
    eager = tiny_playground(tokenizer, adapters, tmp_path / "eager", later=False)
    later = tiny_playground(tokenizer, adapters, tmp_path / "later", later=True)
    try:
        # the page's list is whole at once (names, cards, defaults); no weights are in the model yet
        assert list(later.adapters) == list(eager.adapters) == ["sentiment", "toxicity"]
        assert later.default_adapter("toxicity") == "toxicity" and later.adapter("sentiment").card.task == "sentiment"
        assert later.adapter_host.adapter_names == [] and later.store.loading(["sentiment"]) == ["sentiment"]
        assert not later.store.wait_loaded(["sentiment"], timeout=0.1)

        finals = []
        user = threading.Thread(target=lambda: finals.append(decode(later, "sentiment")))
        user.start()
        time.sleep(1.0)
        assert user.is_alive() and not finals  # it waits (it does not fail) while the adapter is not in
        assert later.scheduler.engine.idle  # and the engine has not seen it

        later.load_behind_page()
        user.join(60)
        assert finals, "the waiting run never finished"
        assert later.adapter_host.adapter_names == ["toxicity", "sentiment"]  # the first tab's default first
        assert later.store.loading(["sentiment", "toxicity"]) == [] and later.problems == []
        assert later.store.load_pending() is None  # nothing left: a second call loads nothing twice

        expected = decode(eager, "sentiment")
        assert [c.token_ids for c in finals[0].tailored] == [c.token_ids for c in expected.tailored]
        assert [c.token_ids for c in finals[0].base] == [c.token_ids for c in expected.base]
        assert finals[0].tailored[0].token_ids != finals[0].base[0].token_ids  # the adapter did steer
    finally:
        eager.close()
        later.close()


def test_an_adapter_whose_weights_fail_behind_the_page_leaves_the_list_with_its_reason(tmp_path, tokenizer):
    adapters = shipped(tmp_path / "adapters", tokenizer)
    (adapters / "sentiment" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    playground = tiny_playground(tokenizer, adapters, tmp_path, later=True)
    try:
        assert "sentiment" in playground.adapters  # its card is fine: listed
        version = playground.adapters_version
        playground.store.load_pending().join(60)
        assert "sentiment" not in playground.adapters and playground.adapters_version > version
        assert playground.adapter_host.adapter_names == ["toxicity"]
        assert len(playground.problems) == 1 and "corrupt adapter" in playground.problems[0]
        assert str(tmp_path) not in playground.problems[0]  # public: no path of the server
        with pytest.raises(ServiceError, match="could not be loaded"):
            playground.store.wait_loaded(["sentiment"])
        with pytest.raises(ServiceError, match="no adapter named 'sentiment'"):  # no longer listed
            decode(playground, "sentiment")
        assert decode(playground, "toxicity").done
    finally:
        playground.close()


@pytest.mark.slow
def test_the_page_answers_before_the_adapters_are_in_and_a_generate_waits_for_its_own(tmp_path, playground_app):
    """The app as app.py starts it (app.main.build, then load_behind_page once the page is up), against the eagerly
    loaded playground of the other API tests: the same adapters, the same request, the same result."""
    from gradio_client import Client

    from app.ui import build_ui, launch_options, queue_options
    from tests.test_app_api import generate

    eager = playground_app.service
    config = AppConfig(adapters_dir=eager.config.adapters_dir, runs_dir=str(tmp_path / "runs"),
                       models=ModelsConfig(device="cpu", dtype="float32"), port=free_port(), warm_up=False)
    service = Playground.load(config, behind_page=True)
    demo = build_ui(service)
    demo.queue(**queue_options(config.concurrency, config.queue_size))
    demo.launch(server_name="127.0.0.1", server_port=config.port, prevent_thread_lock=True, quiet=True,
                **launch_options())
    url = f"http://127.0.0.1:{config.port}/"
    try:
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
        shipped_here = [name for name, entry in eager.adapters.items() if entry.source == SHIPPED]  # not those trained since
        assert service.adapter_host.adapter_names == [] and list(service.adapters) == shipped_here
        adapter = eager.default_adapter("toxicity")

        client = Client(url, verbose=False)
        job = client.submit(**generate_values("toxicity", adapter), api_name="/generate_toxicity")
        deadline = time.time() + 60
        while not any("still loading" in str(outputs[6]) for outputs in job.outputs()) and time.time() < deadline:
            time.sleep(0.2)
        assert not job.done() and any("still loading" in str(outputs[6]) for outputs in job.outputs()), job.outputs()

        service.load_behind_page()
        waited = job.result(timeout=300)
        expected = generate(Client(playground_app.url, verbose=False), "toxicity", adapter)
        assert waited[0] == expected[0] and waited[1] == expected[1]  # base and tailored texts
        assert [r["reward"] for r in waited[7]["tailored"]] == pytest.approx([r["reward"] for r in expected[7]["tailored"]])
    finally:
        service.close()
        demo.close()


def generate_values(task: str, adapter: str) -> dict:
    """The arguments tests.test_app_api.generate sends."""
    from tests.test_app_api import demo_inputs

    return {**demo_inputs(task), "adapter": adapter, "max_new_tokens": 6, "seed": 0}
