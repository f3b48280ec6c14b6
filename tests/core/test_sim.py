"""The simulation twin (fowm_core.sim): reference semantics of docs/algorithm.md §7.1, determinism,
images, and the scripted behaviour policy."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from fowm_core import tasks
from fowm_core.data import convert
from fowm_core.errors import ConfigError, EnvError
from fowm_core.sim import JOINT_NAMES, XarmEnv, make_env, scene, state_dim
from fowm_core.sim.scripted import ScriptedPolicy, collect_episodes
from fowm_core.tasks.base import TABLE_TOP_Z
from fowm_core.tasks.lift import target_z as lift_target_z

ACTION_DIMS = {"reach": 3, "push": 3, "lift": 4}     # the reference's


def _action(task: str, xyz, grip: float = 0.0) -> np.ndarray:
    a = np.array(xyz, dtype=np.float64)
    return np.append(a, grip) if ACTION_DIMS[task] == 4 else a


def _link7(env: XarmEnv) -> np.ndarray:
    return env.data.xpos[env.model.body("link7").id].copy()


@pytest.mark.parametrize("task", tasks.names())
def test_spaces_and_observations(task):
    env = make_env(task, "state", seed=0)
    obs, info = env.reset()
    assert env.action_space.shape == (ACTION_DIMS[task],)
    assert obs["state"].dtype == np.float32
    assert obs["state"].shape == (state_dim(task),) == env.observation_space["state"].shape
    assert state_dim(task) == {"reach": 10, "push": 16, "lift": 10}[task]
    ts = info["task_state"]
    np.testing.assert_allclose(obs["state"][:3], ts.eef, atol=1e-6)
    # The relative vectors follow the positions (the reference's state obs carry them too).
    pairs = {"reach": [("goal", "eef")], "push": [("obj", "eef"), ("goal", "obj")],
             "lift": [("obj", "eef")]}[task]
    relative = [getattr(ts, a) - getattr(ts, b) for a, b in pairs]
    np.testing.assert_allclose(obs["state"][-3 * len(relative):], np.concatenate(relative),
                               atol=1e-6)
    assert info["joint_pos"].shape == (8,) and info["joint_names"] == JOINT_NAMES
    assert JOINT_NAMES[-1] == "drive_joint"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gymnasium_env_checker_passes():
    check_env(make_env("lift", "all"))


def test_poses_for_the_ros_node():
    env = make_env("push", seed=0)
    _, info = env.reset()
    pos, quat = env.eef_pose()
    np.testing.assert_array_equal(pos, info["task_state"].eef)
    assert abs(quat[1]) == pytest.approx(1.0, abs=0.01)       # tool pointing down
    obj, obj_quat = env.object_pose()
    np.testing.assert_array_equal(obj, info["task_state"].obj)
    assert obj_quat[0] == pytest.approx(1.0, abs=0.01)
    assert make_env("reach").object_pose() is None


def test_all_mode_has_image_and_4d_proprio():
    env = make_env("lift", "all", seed=0)
    obs, _ = env.reset()
    assert set(obs) == {"state", "rgb"}
    assert obs["state"].shape == (4,)
    np.testing.assert_array_equal(obs["state"], env.proprio())
    assert obs["rgb"].shape == (3, 84, 84) and obs["rgb"].dtype == np.uint8
    assert obs["rgb"].std() > 10, "camera0 image is blank"
    assert env.render(160, 120).shape == (120, 160, 3)
    rgb_only, _ = make_env("push", "rgb", seed=0).reset()
    assert set(rgb_only) == {"rgb"}


def test_mocap_moves_exactly_5_cm_per_env_step_and_clips():
    env = make_env("lift", seed=0)
    env.reset()
    for a in (_action("lift", [1.0, 0, 0]), _action("lift", [2.0, 0, 0])):
        anchor = _link7(env)
        target = env.apply_action(a)
        np.testing.assert_allclose(target - anchor, [0.05, 0.0, 0.0], atol=1e-12)
        np.testing.assert_array_equal(env.data.mocap_pos[0], target)
    np.testing.assert_array_equal(env.data.mocap_quat[0], [0.0, 1.0, 0.0, 0.0])
    one, two = make_env("lift", seed=0), make_env("lift", seed=0)
    one.reset(), two.reset()
    out_one = one.step(_action("lift", [1.0, -1.0, 0.5], 1.0))
    out_two = two.step(_action("lift", [2.0, -3.0, 0.5], 7.0))
    np.testing.assert_array_equal(out_one[0]["state"], out_two[0]["state"])
    assert out_one[1] == out_two[1]


@pytest.mark.parametrize("repeat", [1, 2, 3])
def test_agent_step_is_action_repeat_env_steps(repeat):
    env = make_env("reach", seed=3, action_repeat=repeat)
    env.reset()
    before = env.eef
    env.step(np.array([1.0, 0.0, 0.0]))
    moved = env.eef - before
    assert moved[0] == pytest.approx(0.05 * repeat, abs=0.005)
    assert np.abs(moved[1:]).max() < 0.005
    assert env.data.time == pytest.approx(repeat * 0.08 + 10 * 20 * 0.002)


def test_episode_is_25_agent_steps_truncated_never_terminated():
    env = make_env("push", seed=1)
    env.reset()
    for t in range(25):
        _, _, terminated, truncated, info = env.step(np.zeros(3))
        assert terminated is False
        assert truncated == (t == 24)
        assert info["steps"] == t + 1


def test_workspace_limits_clamp_the_target():
    env = make_env("lift", seed=0)
    env.reset()
    ws = env.workspace
    for _ in range(8):
        env.step(_action("lift", [1.0, 1.0, -1.0]))
    target = env.apply_action(_action("lift", [1.0, 1.0, -1.0]))
    np.testing.assert_allclose(target - scene.TOOL_OFFSET, [ws.high[0], ws.high[1], ws.low[2]])
    assert env.eef[0] <= ws.high[0] + 0.003 and env.eef[1] <= ws.high[1] + 0.003
    assert env.eef[2] >= ws.low[2] - 0.003
    with pytest.raises(ConfigError, match="below high"):
        scene.Workspace(low=(1.0, 0.0, 0.5), high=(0.9, 1.0, 1.0))


def test_seeded_episodes_are_deterministic():
    actions = np.random.default_rng(0).uniform(-1.5, 1.5, (10, 4))

    def rollout(env: XarmEnv, seed: int) -> np.ndarray:
        obs, _ = env.reset(seed=seed)
        states = [obs["state"]]
        for a in actions:
            states.append(env.step(a)[0]["state"])
        return np.stack(states)

    env_a, env_b = make_env("lift", seed=7), make_env("lift")
    first = rollout(env_a, 7)
    np.testing.assert_array_equal(first, rollout(env_b, 7))
    np.testing.assert_array_equal(first, rollout(env_a, 7))
    assert not np.array_equal(first[0], rollout(env_a, 8)[0])
    seeded, _ = make_env("lift", seed=7).reset()            # make_env's seed seeds reset()
    np.testing.assert_array_equal(seeded["state"], first[0])


def test_initial_conditions_follow_the_reference_ranges():
    push, lift = make_env("push"), make_env("lift")
    for seed in range(5):
        _, info = push.reset(seed=seed)
        s = info["task_state"]
        assert np.all(np.abs(s.obj[:2] - [1.405, 0.3]) <= 0.081)
        assert np.all(np.abs(s.goal[:2] - [1.6, 0.2]) <= 0.1)
        assert np.all(np.abs(s.eef - scene.EEF_START) <= 0.05 + 0.003)
        _, info = lift.reset(seed=seed)
        s = info["task_state"]
        assert np.all(np.abs(s.obj[:2] - [1.505, 0.2]) <= 0.051)
        assert s.obj_init_z == pytest.approx(TABLE_TOP_Z + 0.035, abs=0.002)
        assert s.goal[2] == lift_target_z(s.obj_init_z)


def test_lift_success_threshold_with_the_cube_placed_by_hand():
    env = make_env("lift", seed=2)
    _, info = env.reset()
    start = info["task_state"].obj
    init_z = info["task_state"].obj_init_z
    for z, expected in ((init_z + 0.15, True), (init_z + 0.15 - 1e-6, False)):
        env.place_object([start[0], start[1], z])
        assert env.task_state().obj[2] == z
        assert tasks.success("lift", env.task_state()) is expected


def test_push_reward_and_success_with_the_cube_placed_by_hand():
    env = make_env("push", seed=4)
    _, info = env.reset()
    goal = info["task_state"].goal
    env.place_object(goal + np.array([0.03, 0.0, 0.021]))
    state = env.task_state()
    dist = np.hypot(0.03, 0.021)
    assert tasks.success("push", state)
    assert tasks.reward("push", state, np.array([1.0, 0, 0])) == pytest.approx(
        -2 * (dist + 0.15), abs=1e-9)


@pytest.mark.parametrize("task", tasks.names())
def test_env_reward_equals_the_pure_function_of_logged_state(task):
    env = make_env(task, seed=5)
    env.reset()
    rng = np.random.default_rng(1)
    for _ in range(8):
        a = rng.uniform(-1.3, 1.3, ACTION_DIMS[task])
        _, r, _, _, info = env.step(a)
        assert r == tasks.reward(task, info["task_state"], a, env.action_repeat)
        assert info["success"] == tasks.success(task, info["task_state"])


def test_two_envs_in_one_process_both_render():
    first, second = make_env("lift", "rgb", seed=0), make_env("push", "rgb", seed=0)
    a, _ = first.reset()
    b, _ = second.reset()
    assert a["rgb"].std() > 10 and b["rgb"].std() > 10
    first.close()
    b = second.step(np.zeros(3))[0]
    third, _ = make_env("reach", "rgb", seed=0).reset()
    assert b["rgb"].std() > 10 and third["rgb"].std() > 10


def test_bad_arguments_raise_fowm_errors():
    with pytest.raises(ConfigError, match="unknown task"):
        make_env("stack")
    with pytest.raises(EnvError, match="no object"):
        make_env("reach").place_object(np.zeros(3))
    with pytest.raises(EnvError, match="obs_mode"):
        make_env("lift", "depth")
    env = make_env("reach", seed=0)
    env.reset()
    with pytest.raises(EnvError, match="expected 3 finite values"):
        env.step(np.zeros(4))


@pytest.mark.parametrize("task", tasks.names())
def test_clean_scripted_policy_solves_the_task(task):
    env = make_env(task)
    policy = ScriptedPolicy(task, noise=0.0)
    _, info = env.reset(seed=11)
    truncated = False
    while not truncated:
        _, _, _, truncated, info = env.step(policy.act(info["task_state"]))
    assert info["success"]


def test_collect_episodes_records_what_rewards_need():
    episodes = collect_episodes("push", 2, noise=0.3, seed=3, obs_mode="all")
    assert len(episodes) == 2
    ep = episodes[0]
    assert len(ep) == 25 and ep.obs["rgb"].shape == (26, 3, 84, 84)
    assert ep.obs["state"].shape == (26, 4) and ep.action.shape == (25, 3)
    assert ep.terminal is False and ep.info["seed"] == 3
    for t in range(25):
        state = tasks.TaskState(ep.info["eef"][t + 1], ep.info["gripper"][t + 1],
                                ep.info["obj"][t + 1], ep.info["goal"], ep.info["obj_init_z"])
        assert ep.reward[t] == pytest.approx(tasks.reward("push", state, ep.action[t]), abs=1e-6)
    final = tasks.TaskState(ep.info["eef"][-1], ep.info["gripper"][-1], ep.info["obj"][-1],
                            ep.info["goal"])
    assert ep.success == tasks.success("push", final)
    policy = ScriptedPolicy("push", 0.0)
    np.testing.assert_allclose(policy.act({"state": convert.build_state(
        "push", "state", ep.info["eef"][0], ep.info["gripper"][0], ep.info["obj"][0],
        ep.info["goal"])}),
        policy.act(tasks.TaskState(ep.info["eef"][0], ep.info["gripper"][0],
                                   ep.info["obj"][0], ep.info["goal"])), atol=1e-5)


@pytest.mark.parametrize("task", ["push", "lift"])
def test_restore_returns_to_the_snapshot_exactly(task):
    """A what-if rollout from a snapshot, then restore: the same actions again give the same
    states, rewards and success (what `fowm diagnose` relies on)."""
    env = make_env(task, "state", seed=3)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(4):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
    snap = env.snapshot()
    actions = rng.uniform(-1, 1, (5, *env.action_space.shape))
    first = [env.step(a) for a in actions]
    env.restore(snap)
    assert env._steps == 4
    again = [env.step(a) for a in actions]
    for (o1, r1, _, t1, i1), (o2, r2, _, t2, i2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(o1["state"], o2["state"])
        assert r1 == r2 and t1 == t2 and i1["success"] == i2["success"]
    env.close()
