from nncompress.algorithms.quantization.placement import PlacementOptions, find_quantization_setup
from nncompress.graph.ir import InputRef, TensorRef
from nncompress.graph.ops import OpKind as K
from nncompress.hardware.rules import ASYM, CPU_RULES, SYM
from tests.unit.graph_builder import G


def place(graph, ignored=None, **kw):
    return find_quantization_setup(graph, ignored or {}, PlacementOptions(rules=CPU_RULES, **kw))


def points(setup):
    return sorted(
        (q.tensor.node, None if q.consumers is None else tuple(c.node for c in q.consumers))
        for q in setup.activations
    )


def test_conv_bias_relu_chain_takes_quantizer_after_relu_only():
    g = G()
    x = g.input("x")
    c1 = g.conv("conv1", x)
    b = g.op("bias1", K.ADD, [c1], const_ports=[1])
    r = g.op("relu1", K.RELU, [b])
    c2 = g.conv("conv2", r)
    g.output(c2)
    setup = place(g.build())
    assert points(setup) == [("relu1", None), ("x", None)]
    assert [w.node for w in setup.weights] == ["conv1", "conv2"]


def test_quantizer_propagates_up_through_maxpool_and_reshape():
    g = G()
    x = g.input("x")
    r = g.op("relu", K.RELU, [g.conv("conv", x)])
    p = g.op("pool", K.MAX_POOL, [r])
    f = g.op("flatten", K.RESHAPE, [p])
    g.output(g.op("fc", K.LINEAR, [f], weight=True))
    assert points(place(g.build())) == [("relu", None), ("x", None)]


def test_branches_merge_into_one_quantizer_when_all_consumers_quantize():
    g = G()
    x = g.input("x")
    r = g.op("relu", K.RELU, [x])
    a = g.conv("convA", r)
    b = g.conv("convB", r)
    g.output(g.op("cat", K.CONCAT, [a, b]))
    setup = place(g.build())
    assert ("relu", None) in points(setup)


def test_branch_to_float_op_keeps_per_consumer_quantizers():
    g = G()
    x = g.input("x")
    r = g.op("relu", K.RELU, [x])
    p = g.op("pool", K.MAX_POOL, [r])
    conv = g.conv("conv", p)
    g.output(conv, "a")
    g.output(g.op("soft", K.SOFTMAX, [r]), "b")
    setup = place(g.build())
    # the request moved through MaxPool but relu also feeds Softmax: it stays at the pool input
    assert points(setup) == [("relu", ("pool",))]
    assert setup.activations[0].consumers == (InputRef("pool", 0),)


def test_concat_inputs_share_one_unified_range():
    g = G()
    x = g.input("x")
    a = g.op("sigA", K.SIGMOID, [x])
    b = g.op("tanhB", K.TANH, [x])
    cat = g.op("cat", K.CONCAT, [a, b])
    g.output(g.conv("conv", cat))
    setup = place(g.build())
    unified = {q.tensor.node: q.unified for q in setup.activations}
    assert set(unified) == {"sigA", "tanhB"}
    assert unified["sigA"] is not None and unified["sigA"] == unified["tanhB"]


def test_residual_add_fused_with_conv_quantizes_only_the_skip_input():
    g = G()
    x = g.input("x")
    r = g.op("relu0", K.RELU, [x])
    c = g.conv("conv", r)
    add = g.op("add", K.ADD, [c, r])
    relu = g.op("relu1", K.RELU, [add])
    g.output(g.conv("conv2", relu))
    setup = place(g.build())
    pts = points(setup)
    assert ("relu0", None) in pts  # skip branch and conv input merge on relu0's output
    assert not any(node == "conv" for node, _ in pts)  # nothing between conv and the fused add
    assert ("relu1", None) in pts


def test_elementwise_with_constant_operand_gets_no_input_quantizer():
    g = G()
    x = g.input("x")
    m = g.op("mul", K.MUL, [g.op("sig", K.SIGMOID, [x])], const_ports=[1])
    g.output(m)
    assert place(g.build()).activations == []


def test_ignored_node_gets_no_quantizers_and_blocks_propagation():
    g = G()
    x = g.input("x")
    r = g.op("relu", K.RELU, [x])
    p = g.op("pool", K.MAX_POOL, [r])
    g.output(g.conv("conv", p))
    setup = place(g.build(), ignored={"pool": "user"})
    assert points(setup) == [("pool", None)]
    setup = place(g.build(), ignored={"conv": "user"})
    assert setup.activations == [] and setup.weights == []
    assert setup.skipped == {"conv": "user"}


def test_integer_inputs_are_not_quantized():
    g = G()
    ids = g.input("ids", dtype="int")
    e = g.op("emb", K.EMBEDDING, [ids], weight=True)
    g.output(g.op("fc", K.LINEAR, [e], weight=True))
    setup = place(g.build())
    assert points(setup) == [("emb", None)]
    assert [w.node for w in setup.weights] == ["emb", "fc"]


def test_depthwise_input_is_per_channel():
    g = G()
    x = g.input("x")
    r = g.op("relu", K.RELU, [x])
    g.output(g.conv("dw", r, kind=K.DEPTHWISE_CONV))
    setup = place(g.build())
    by_node = {q.tensor.node: q for q in setup.activations}
    assert by_node["relu"].per_channel


def test_transformer_ignores_add_mul_and_attention_output_and_forces_symmetric_matmul():
    g = G()
    x = g.input("x", shape=(1, 4, 8))
    q = g.op("q", K.LINEAR, [x], weight=True, shape=(1, 4, 8))
    k = g.op("k", K.LINEAR, [x], weight=True, shape=(1, 4, 8))
    v = g.op("v", K.LINEAR, [x], weight=True, shape=(1, 4, 8))
    kt = g.op("kt", K.TRANSPOSE, [k], shape=(1, 8, 4))
    s = g.op("scores", K.MATMUL, [q, kt], shape=(1, 4, 4))
    soft = g.op("softmax", K.SOFTMAX, [s], shape=(1, 4, 4))
    ctx = g.op("ctx", K.MATMUL, [soft, v], shape=(1, 4, 8))
    res = g.op("residual", K.ADD, [ctx, x], shape=(1, 4, 8))
    g.output(res)
    setup = place(g.build(), transformer=True)
    assert "ctx" in setup.skipped and "residual" in setup.skipped
    by_tensor = {q.tensor: q for q in setup.activations}
    assert by_tensor[TensorRef("q")].modes == frozenset({SYM})
    assert by_tensor[TensorRef("k")].modes == frozenset({SYM})
    assert by_tensor[TensorRef("x")].modes == frozenset({SYM, ASYM})
    assert TensorRef("softmax") not in by_tensor and TensorRef("v") not in by_tensor


def test_overflow_fix_marks_first_convolution_only():
    g = G()
    x = g.input("x")
    c1 = g.conv("conv1", x)
    g.output(g.conv("conv2", g.op("relu", K.RELU, [c1])))
    setup = place(g.build(), overflow_fix_first_layer=True)
    assert {w.node: w.half_range for w in setup.weights} == {"conv1": True, "conv2": False}


def test_quantize_outputs_adds_output_quantizer():
    g = G()
    x = g.input("x")
    g.output(g.op("relu", K.RELU, [g.conv("conv", x)]))
    assert ("relu", None) in points(place(g.build(), quantize_outputs=True))
    assert ("relu", None) not in points(place(g.build()))


def test_cpu_spr_keeps_one_quantized_input_per_add():
    g = G()
    x = g.input("x")
    r = g.op("relu", K.RELU, [x])
    big = g.conv("convA", r)
    small = g.op("convB", K.CONV, [r], weight=True, shape=(1, 3, 4, 4))
    g.output(g.op("add", K.ADD, [big, small]))
    both = place(g.build(), fuse_linear_arithmetic=False)
    assert sorted(q.tensor.node for q in both.activations if q.targets == ("add",)) == ["convA", "convB"]
    spr = place(g.build(), cpu_spr=True, fuse_linear_arithmetic=False)
    assert [q.tensor.node for q in spr.activations if q.targets == ("add",)] == ["convB"]  # larger one dropped


def test_cpu_spr_drops_the_non_branching_add_input():
    g = G()
    x = g.input("x")
    skip = g.op("sig", K.SIGMOID, [x])
    other = g.op("tanh", K.TANH, [x])
    add = g.op("add", K.ADD, [other, skip])
    g.output(add, "a")
    g.output(g.op("soft", K.SOFTMAX, [skip]), "b")
    spr = place(g.build(), cpu_spr=True)
    assert [q.tensor.node for q in spr.activations] == ["sig"]
