"""PairRM as a reward service: start `pairrm serve` in this process and call it as OpenRLHF, TRL and verl would.

python examples/serve_rewards.py [--model PATH_OR_ID] [--device cpu]

A real deployment runs the server on its own (`pairrm serve --model llm-blender/PairRM-hf --port 8000`) and the
trainers point at it: OpenRLHF `--remote_rm_url http://host:8000/get_reward`, TRL
`reward_funcs=PairRMRemoteReward("http://host:8000", mode="group")`, verl `custom_reward_function.path` = a file
holding `from pairrm_hf.serve import compute_score` (name `compute_score`, `reward_kwargs: {url: ...}`).
"""

import argparse
import json
import urllib.request

from pairrm_hf.serve import RemotePairRM, compute_score
from pairrm_hf.serve.app import BackgroundServer, create_app
from pairrm_hf.serve.service import PairRMService
from pairrm_hf.trl import PairRMRemoteReward

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="llm-blender/PairRM-hf")
parser.add_argument("--device", default=None)
args = parser.parse_args()

service = PairRMService.from_pretrained(args.model, device=args.device)
with BackgroundServer(create_app(service)) as server:  # 127.0.0.1, a free port
    print("serving on", server.url)

    # 1. OpenRLHF's remote reward request: query = prompt + response, prompts, labels ("" = no reference)
    prompt = "User: What is the capital of France?\nAssistant: "
    responses = ["Paris.", "It is Paris.", "Berlin."]
    body = {"query": [prompt + r for r in responses], "prompts": [prompt] * 3, "labels": ["", "", ""]}
    request = urllib.request.Request(
        f"{server.url}/get_reward", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as answer:
        rewards = json.loads(answer.read())["rewards"]
    print("OpenRLHF /get_reward (group-relative):", [round(r, 3) for r in rewards])

    # 2. TRL: the same modes and numbers as PairRMReward, computed by the server
    reward = PairRMRemoteReward(server.url, mode="reference")
    print(
        "TRL reward vs reference:",
        [
            round(r, 3)
            for r in reward(["Capital of France?"] * 2, ["Paris.", "Lyon."], reference=["Paris is the capital."] * 2)
        ],
    )

    # 3. verl: reward of a solution against the ground truth
    print(
        "verl compute_score:",
        round(compute_score("demo", "Paris.", "Paris", {"question": "Capital of France?"}, url=server.url), 3),
    )

    # 4. PairRM's own methods over HTTP
    for r in RemotePairRM(server.url).rank("Capital of France?", ["Paris.", "Berlin.", "Lyon."]):
        print(f"rank {r.rank}  {r.score:+.3f}  {r.text}")
service.close()
