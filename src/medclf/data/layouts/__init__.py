"""Data layouts: how a source (a folder tree, a CSV manifest, an npz, the phantom generator) is listed.

Each layout is a plain function ``(data.source section, preprocessing) -> SourceListing``, in the module of its
family, registered below in :data:`LAYOUTS` under the ``data.source.type`` a user writes, with the facts other
stages need about it (:class:`LayoutInfo`). A listing holds image files still to decode, or arrays already at
the preprocessing's size; :func:`medclf.data.sources.load_dataset` decodes and audits it.

=================  ==========================================================  ================================
type               source                                                      module
=================  ==========================================================  ================================
``folder``         ``root/<class>/<image>``                                    :mod:`.folder`
``splits``         ``root/<split>/<class>/<image>``                            :mod:`.folder`
``folds``          ``root/Fold<k>/<split>/<class>/<image>``                    :mod:`.folds`
``patients``       ``root/<split>/<body part>/<patient>/<study>_<label>/...``  :mod:`.patient_tree`
``csv``            a CSV manifest, one row per image                           :mod:`.manifest`
``npz``            a MedMNIST-style ``.npz``                                   :mod:`.arrays`
``synthetic``      MRI-like head phantoms                                      :mod:`.arrays`
=================  ==========================================================  ================================
"""

from __future__ import annotations

from medclf.data.layouts.arrays import npz_layout, synthetic_layout
from medclf.data.layouts.base import LayoutInfo, SourceListing
from medclf.data.layouts.folder import folder_layout, splits_layout
from medclf.data.layouts.folds import folds_layout
from medclf.data.layouts.manifest import csv_layout
from medclf.data.layouts.patient_tree import patients_layout
from medclf.registry import Registry

__all__ = ["LAYOUTS", "LayoutInfo", "SourceListing"]

LAYOUTS: Registry[LayoutInfo] = Registry("data layout")

# patient_folder_depth: the folders (split, fold, class) above a patient folder, for data.patient_ids: folder
LAYOUTS.register("folder")(LayoutInfo(folder_layout, patient_folder_depth=1))
LAYOUTS.register("splits")(LayoutInfo(splits_layout, patient_folder_depth=2))
LAYOUTS.register("folds")(LayoutInfo(folds_layout, patient_folder_depth=3))
LAYOUTS.register("patients")(LayoutInfo(patients_layout))  # the tree names its patients
LAYOUTS.register("csv")(LayoutInfo(csv_layout))  # the image's own folder, unless a patient column
LAYOUTS.register("npz")(LayoutInfo(npz_layout))  # arrays: no files, no folders
LAYOUTS.register("synthetic")(LayoutInfo(synthetic_layout))
