"""Per-sidecar merge time: ``merge_tags`` (parse, keyword and record edits, serialize) on two realistic
sidecars, re-decided from one set of 10 tags to another (3 removed, 3 added), as a re-run does.

    python benchmarks/xmp_bench.py                     # this checkout's ramtag/writers/xmp.py
    python benchmarks/xmp_bench.py --module OLD.py     # another version of that file (git show REV:...)

The sidecars: one ramtag wrote (10 tags, ~3 KB) and a Lightroom-like one with develop settings (450
attributes, a tone curve, 40 history events, ~28 KB with ramtag's keywords). CPU time per merge is
printed as the median and minimum of 5 rounds; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

P = Path("photo.jpg.xmp")
TAGS_A = ["cat", "dog", "tree", "sky", "grass", "person", "car", "road", "building", "cloud"]
TAGS_B = [*TAGS_A[:7], "sun", "water", "boat"]


def lightroom_like() -> bytes:
    crs = "\n".join(f'   crs:Setting{i}="{i * 0.37:+.2f}"' for i in range(450))
    curve = "\n".join(f"      <rdf:li>{i}, {i}</rdf:li>" for i in range(0, 256, 2))
    history = "\n".join(
        f'     <rdf:li stEvt:action="saved" stEvt:instanceID="xmp.iid:{i:032x}"'
        f' stEvt:when="2023-05-01T10:{i % 60:02d}:00+02:00"'
        ' stEvt:softwareAgent="Adobe Photoshop Lightroom Classic 12.0" stEvt:changed="/metadata"/>'
        for i in range(40)
    )
    return f"""<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000 1.000000">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
   xmp:Rating="3"
   crs:Version="15.0"
{crs}>
   <crs:ToneCurvePV2012>
    <rdf:Seq>
{curve}
    </rdf:Seq>
   </crs:ToneCurvePV2012>
   <xmpMM:History>
    <rdf:Seq>
{history}
    </rdf:Seq>
   </xmpMM:History>
   <dc:subject>
    <rdf:Bag>
     <rdf:li>vacation</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <lr:hierarchicalSubject>
    <rdf:Bag>
     <rdf:li>places|Zürich</rdf:li>
    </rdf:Bag>
   </lr:hierarchicalSubject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
""".encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", type=Path, help="time this copy of ramtag/writers/xmp.py instead")
    args = ap.parse_args()
    if args.module:
        spec = importlib.util.spec_from_file_location("xmp_under_test", args.module)
        assert spec is not None and spec.loader is not None
        xmp = importlib.util.module_from_spec(spec)
        sys.modules["xmp_under_test"] = xmp
        spec.loader.exec_module(xmp)
    else:
        from ramtag.writers import xmp  # type: ignore[no-redef]
    merge = xmp.merge_tags
    ramtag_written, _ = merge(None, TAGS_A, path=P, model="m")
    lightroom, _ = merge(lightroom_like(), TAGS_A, path=P, model="m")
    for name, data, n in (
        ("ramtag-written, 10 tags", ramtag_written, 500),
        ("Lightroom-like", lightroom, 100),
    ):
        rounds = []
        for _ in range(5):
            start = time.process_time()
            for _ in range(n):
                merge(data, TAGS_B, path=P, model="m", date="2026-01-01T00:00:00Z")
            rounds.append((time.process_time() - start) / n * 1e3)
        print(f"{name:24s} {len(data):6,d} bytes  {statistics.median(rounds):.3f} ms (min {min(rounds):.3f})")


if __name__ == "__main__":
    main()
